"""The image store: Glance-style configuration, a SQLite catalog and storage backends.

``config`` reads ``enabled_backends`` / ``default_backend`` (or the single-store form);
``catalog`` keeps image records with Glance's fields and status machine; ``file`` (and, when
configured, ``swift`` and ``rbd``) hold the bytes; ``upload`` and ``images`` are the
operations the ``imgfmt image`` commands call.
"""
