"""One module per measured stage; bench/run.py runs them and writes the report."""
