"""Live processing (``tiltflow watch``): results while the microscope is still collecting.

Modules: ``completeness`` (when a movie, a section, a series is complete), ``state`` (what is known
about each series, read from the folder), ``tasks`` (the work done in worker processes, on top of the
runner's steps), ``scheduler`` (the watch loop), ``page`` (the live page and ``--serve``).
"""
