"""Chest X-rays: label tables (PadChest, ChestX-ray14, folders), DICOM X-rays, image preparation."""
