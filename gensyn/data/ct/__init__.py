"""CT formats: reading NRRD, DICOM series, NumPy and NIfTI volumes; conversion to NIfTI."""
