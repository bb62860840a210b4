"""The shipped models' folders (config.json + weights), installed as package data."""
