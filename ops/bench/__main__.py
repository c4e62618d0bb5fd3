from ops.bench.report import main

main()
