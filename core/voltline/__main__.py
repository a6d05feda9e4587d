"""`python -m voltline` runs the `voltline` command."""

from voltline.cli import main

if __name__ == "__main__":
    main()
