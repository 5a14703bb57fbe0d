"""Plots and reports rendered from results: training curves, ROC curves, model comparison, search history."""
