"""Run the pvit benchmark from a checkout: ``python model/bench.py [--help]`` (= ``python -m pvit.bench``)."""

from pvit.bench import main

if __name__ == "__main__":
    main()
