"""What users see: live progress (progress.py), the front as a table (show.py), picking a
trial by rule (pick.py), and the HTML/PNG report (plotdata.py reads a study, plots.py draws)."""
