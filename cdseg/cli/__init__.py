"""The `cdseg` command line: thin entry points that parse, validate and call one library function."""
