from voxws.bench.cli import main

main()
