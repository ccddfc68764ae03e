"""`receipts serve`: the local web page (server.py), its HTML (pages.py) and charts (charts.py)."""
