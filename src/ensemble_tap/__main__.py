from ensemble_tap.cli import main

main()
