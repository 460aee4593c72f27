"""`python -m bot`: the emailsync command line."""

from bot.cli import main

main()
