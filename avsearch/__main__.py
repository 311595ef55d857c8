from avsearch.cli import main

main()
