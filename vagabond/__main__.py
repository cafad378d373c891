"""`python -m vagabond`."""

from vagabond.entry import main

main()
