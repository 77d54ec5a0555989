"""Wrappers around external programs (MotionCor2/3, CTFFIND4/5, AreTomo2/3, IMOD): command line, run, parse."""
