"""The domain: what docbatch does with jobs, units, results, tenants, schedules and
files, as plain functions over a Session. Imports schema/; imported by api/ and
worker/, never the other way round."""
