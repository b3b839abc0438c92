"""``imgfmt image`` and ``imgfmt store`` as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from imgfmt.cli.main import cli
from tests.store.conftest import digests, make_backed_qcow2, make_qcow2, write_conf


@pytest.fixture()
def conf(tmp_path: Path) -> Path:
    return write_conf(
        tmp_path / "glance-api.conf",
        "[DEFAULT]\nenabled_backends = fast:file, slow:file\n"
        "[glance_store]\ndefault_backend = fast\n"
        f"[fast]\nstore_description = quick disks\nweight = 100\n"
        f"filesystem_store_datadir = {tmp_path / 'fast'}\n"
        f"[slow]\nfilesystem_store_datadir = {tmp_path / 'slow'}\n"
        f"[database]\nconnection = sqlite:///{tmp_path / 'catalog.db'}\n",
    )


def _run(conf: Path, *args: str, input: bytes | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["--config-file", str(conf), *args], input=input)
    return result.exit_code, result.stdout, result.stderr


def test_create_list_show_save_delete(conf: Path, tmp_path: Path) -> None:
    image = make_qcow2(tmp_path / "cirros.qcow2")
    code, out, err = _run(
        conf,
        "image",
        "create",
        "cirros",
        "--file",
        str(image),
        "--disk-format",
        "qcow2",
        "--store",
        "slow",
        "--property",
        "os_distro=cirros",
        "-f",
        "json",
    )
    assert code == 0, err
    created = json.loads(out)
    assert created["status"] == "active"
    assert created["stores"] == "slow"
    assert created["checksum"] == digests(image)[0]
    assert created["locations"][0]["url"] == f"file://{tmp_path / 'slow' / created['id']}"

    code, out, _ = _run(conf, "image", "list", "-f", "value")
    assert out == f"{created['id']} cirros active\n"
    code, out, _ = _run(conf, "image", "list", "--long", "-f", "json")
    assert json.loads(out)[0]["Hash Algo"] == "sha512"
    code, out, _ = _run(conf, "image", "show", "cirros", "-f", "value", "-c", "virtual_size")
    assert out == f"{8 << 20}\n"

    out_file = tmp_path / "back.img"
    assert _run(conf, "image", "save", "cirros", "--file", str(out_file))[0] == 0
    assert out_file.read_bytes() == image.read_bytes()

    assert _run(conf, "image", "delete", created["id"])[0] == 0
    assert _run(conf, "image", "list", "-f", "value")[1] == ""
    assert list((tmp_path / "slow").iterdir()) == []


def test_unsafe_create_exits_1_and_writes_nothing(conf: Path, tmp_path: Path) -> None:
    image = make_backed_qcow2(tmp_path / "top.qcow2")
    code, _, err = _run(conf, "image", "create", "evil", "--file", str(image))
    assert code == 1
    assert "backing-file" in err and "nothing was written" in err
    assert _run(conf, "image", "list", "-f", "value")[1] == ""


def test_create_from_stdin(conf: Path, tmp_path: Path) -> None:
    image = make_qcow2(tmp_path / "disk.qcow2")
    code, out, err = _run(
        conf,
        "image",
        "create",
        "piped",
        "--file",
        "-",
        "-f",
        "value",
        "-c",
        "disk_format",
        "-c",
        "status",
        input=image.read_bytes(),
    )
    assert (code, out) == (0, "qcow2 active\n"), err


def test_store_list(conf: Path) -> None:
    code, out, _ = _run(conf, "store", "list", "-f", "json")
    assert code == 0
    stores = json.loads(out)
    assert [(s["ID"], s["Type"], s["Weight"], s["Default"]) for s in stores] == [
        ("fast", "file", 100, True),
        ("slow", "file", 0, False),
    ]
    assert all(s["Free Space"] > 0 for s in stores)


def test_unknown_image_and_bad_config(conf: Path, tmp_path: Path) -> None:
    code, _, err = _run(conf, "image", "show", "nope")
    assert code == 2 and "no image with id or name 'nope'" in err
    bad = write_conf(tmp_path / "bad.conf", "[DEFAULT]\nenabled_backends = fast\n")
    code, _, err = _run(bad, "store", "list")
    assert code == 2
    assert "bad.conf: [DEFAULT] enabled_backends" in err
    code, _, err = _run(conf, "image", "create", "x", "--file", str(tmp_path / "missing"))
    assert code == 2 and "missing" in err


def test_embedded_default_needs_no_configuration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IMGFMT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "noconf"))
    monkeypatch.delenv("IMGFMT_CONFIG", raising=False)
    image = make_qcow2(tmp_path / "disk.qcow2")
    result = CliRunner().invoke(cli, ["image", "create", "d", "--file", str(image)])
    assert result.exit_code == 0, result.stderr
    assert len(list((tmp_path / "data" / "images").iterdir())) == 1
    assert (tmp_path / "data" / "catalog.db").exists()


def test_save_to_a_bad_destination_is_an_error_not_a_crash(conf: Path, tmp_path: Path) -> None:
    image = make_qcow2(tmp_path / "cirros.qcow2", "1M")
    assert _run(conf, "image", "create", "cirros", "--file", str(image))[0] == 0
    code, _, err = _run(conf, "image", "save", "cirros", "--file", str(tmp_path / "no" / "x"))
    assert code == 2 and "cannot write in" in err and "No such file or directory" in err
    folder = tmp_path / "folder"
    folder.mkdir()
    code, _, err = _run(conf, "image", "save", "cirros", "--file", str(folder))
    assert code == 2 and "is a directory" in err
    assert list(folder.iterdir()) == []


def test_save_on_a_full_disk_leaves_the_destination_untouched(conf: Path, tmp_path: Path) -> None:
    image = make_qcow2(tmp_path / "big.qcow2", "8M")
    assert _run(conf, "image", "create", "big", "--file", str(image))[0] == 0
    small = tmp_path / "small"
    small.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(small)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        (small / "out.img").write_bytes(b"previous")
        code, _, err = _run(conf, "image", "save", "big", "--file", str(small / "out.img"))
        assert code == 2 and "No space left on device" in err
        assert os.listdir(small) == ["out.img"]
        assert (small / "out.img").read_bytes() == b"previous"
    finally:
        subprocess.run(["umount", "-l", str(small)], check=False)


def test_sigterm_during_save_leaves_no_partial_file(conf: Path, tmp_path: Path) -> None:
    image = make_qcow2(tmp_path / "cirros.qcow2", "4M")
    assert _run(conf, "image", "create", "cirros", "--file", str(image))[0] == 0
    out = tmp_path / "out"
    out.mkdir()
    script = (
        "import os, signal, sys\n"
        "from imgfmt.config import Config\n"
        "from imgfmt.store.catalog import Catalog\n"
        "from imgfmt.store.config import StoreConfig\n"
        "from imgfmt.store.images import save_image\n"
        "config = StoreConfig.load(Config.load(sys.argv[1]))\n"
        "record = Catalog(config.catalog_path).find('cirros')\n"
        "save_image(record, config, sys.argv[2],"
        " lambda done: os.kill(os.getpid(), signal.SIGTERM))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, str(conf), str(out / "x.img")],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    assert proc.returncode != 0
    assert "Interrupted" in proc.stderr
    assert os.listdir(out) == []


def test_a_damaged_catalog_is_an_error_not_a_crash(conf: Path, tmp_path: Path) -> None:
    import sqlite3

    from imgfmt.store.catalog import Catalog

    catalog = Catalog(tmp_path / "catalog.db")
    for i in range(300):
        catalog.create(f"image-{i}" * 20, "raw", "bare", {"k": "v" * 200})
    catalog._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    catalog.close()
    db = tmp_path / "catalog.db"
    size = db.stat().st_size
    with open(db, "r+b") as f:
        f.seek(size // 2)
        f.write(b"\xa5" * 8192)
    with pytest.raises(sqlite3.DatabaseError):  # the damage is real
        sqlite3.connect(db).execute("SELECT * FROM images").fetchall()
    code, _, err = _run(conf, "image", "list")
    assert code == 2 and "catalog" in err and "malformed" in err


def test_save_to_dash_is_refused_not_a_file_named_dash(
    conf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = make_qcow2(tmp_path / "cirros.qcow2", "1M")
    assert _run(conf, "image", "create", "cirros", "--file", str(image))[0] == 0
    monkeypatch.chdir(tmp_path)
    code, out, err = _run(conf, "image", "save", "cirros", "--file", "-")
    assert (code, out) == (2, "") and "not standard output" in err
    assert not (tmp_path / "-").exists()
    assert _run(conf, "image", "save", "cirros", "--file", "./-")[0] == 0
    assert (tmp_path / "-").read_bytes() == image.read_bytes()
