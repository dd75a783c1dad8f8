from gotrace.cli import main

main()
