"""DatasetNeRF Studio entry point: `python main.py` opens the studio, `python main.py --help` the CLI."""
import sys

if __name__ == "__main__":
    if len(sys.argv) > 1:
        from core.cli import main

        sys.exit(main(sys.argv[1:]))
    from app.studio import run

    sys.exit(run())
