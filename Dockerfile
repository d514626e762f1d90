# One image for every Python service of vigil (worker, beat, flower, ingest, api, sim, migrate).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    VIGIL_HOME=/data

RUN useradd --create-home --uid 10001 vigil && mkdir -p /data && chown vigil /data
WORKDIR /app

COPY pyproject.toml README.md ./
COPY core ./core
COPY tasks ./tasks
COPY sim ./sim
COPY beat_schedule.py alembic.ini ./
COPY alembic ./alembic
RUN pip install -e .

USER vigil
ENTRYPOINT ["vigil"]
CMD ["--help"]
