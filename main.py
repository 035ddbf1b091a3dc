"""DatasetNeRF Studio from a checkout: `python main.py` opens the studio, `python main.py --help` the CLI."""
import sys

if __name__ == "__main__":
    from app.studio import main

    sys.exit(main())
