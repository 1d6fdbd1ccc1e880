"""Deploy: the serving API, its prediction log and the Docker package."""
