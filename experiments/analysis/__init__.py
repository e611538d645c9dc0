"""Reading runs: reports and plots, sweep tables, calibration, fidelity."""
