"""The report's sections, one module each, named after the section; each has ``render(ctx: ReportContext)``.
``sim_eval.analysis.render`` runs them in report order."""
