from aso.cli import main

main()
