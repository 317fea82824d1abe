"""`python -m chromowatch` runs the command line."""

from chromowatch.cli import main

raise SystemExit(main())
