from ecoc.cli import run

run()
