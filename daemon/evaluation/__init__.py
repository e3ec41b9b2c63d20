"""Scoring fusewatch against labelled recordings: which windows should alert, and precision, recall, F1."""
