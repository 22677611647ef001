"""Small data files shipped with the package (see README.md here for sources and licences)."""
