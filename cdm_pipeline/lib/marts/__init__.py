"""Marts: customer 360, segments, journeys with attribution, built in DuckDB after identity."""
