"""Register imports started from the web: a dry run, then the same plan applied (issue 17)."""
