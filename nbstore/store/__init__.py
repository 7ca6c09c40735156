"""The store package: the only code that touches a store's files."""
