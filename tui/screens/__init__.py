"""The app's views: one per tab (models, run, compare, vectors, settings) and the help screen."""
