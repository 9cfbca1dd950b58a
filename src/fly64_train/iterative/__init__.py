"""The iterative peer of the study (job=iterative): a conventional ptychographic reconstruction of a
(dose, view)'s test split with pty-chi, scored by the same evaluation as the trained network.

engine.py is framework-free (settings, result, the one-line error when pty-chi is missing);
ptychi_engine.py is the only module that imports pty-chi and torch; job.py is the job itself.
"""
