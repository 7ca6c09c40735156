"""`python -m nbstore`: the same command line as the `nbstore` console script."""

from nbstore.cli import main

if __name__ == "__main__":
    main()
