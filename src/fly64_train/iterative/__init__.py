"""The iterative peer of the study (job=iterative): a conventional ptychographic reconstruction of a
(dose, view)'s test split with pty-chi, scored by the same evaluation as the trained network.

settings.py (settings and result) and engine.py (loading, with the one-line error when pty-chi is
missing) are framework-free; ptychi_engine.py is the only module that imports pty-chi and torch;
job.py is the job itself.
"""
