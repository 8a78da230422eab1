"""python -m utils.audit: see utils/audit/__init__.py."""
from utils.audit.cli import main

main()
