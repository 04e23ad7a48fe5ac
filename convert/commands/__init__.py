"""Console scripts of conversion: sdm-convert, sdm-sweep, sdm-compare, sdm-finetune."""
