"""Golden .vqk files and the tiny run that wrote them (regenerate: see make_golden.py)."""
