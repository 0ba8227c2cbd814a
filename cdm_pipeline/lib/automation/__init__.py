"""Deciding when the pipeline runs: landed-file fingerprints for the landing sensor."""
