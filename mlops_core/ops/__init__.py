"""Operations: local services, the Prefect API, people and their writes, project set-up."""
