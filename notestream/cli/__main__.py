"""`python -m notestream.cli`."""

from notestream.cli import main

main()
