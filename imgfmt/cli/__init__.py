"""The ``imgfmt`` command line: click commands that call the library and hand back a renderer."""
