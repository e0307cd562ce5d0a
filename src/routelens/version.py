"""The version of routelens, in a module of its own so that every layer can read it (the package's
`__init__` sits above them all)."""

VERSION = "0.1.0"
