"""Analysis of episode records: statistics (``stats``), loading runs and sweeps (``runs``), the report (``render``,
``plots``, ``videos``), threshold calibration (``calibration``) and synthetic records for tests and examples
(``synthetic``). Entry points: ``python -m sim_eval.report`` and ``python -m sim_eval.calibrate``."""
