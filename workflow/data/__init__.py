"""Raw files in, Parquet splits and the feature spec out: the prepare step and what it is made of."""
