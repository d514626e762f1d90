# One image for every Python service of vigil (worker, beat, flower, ingest, api, sim, migrate).
# Dependencies come from requirements.lock in their own layer (rebuilt only when the lock
# changes); the code is installed as a wheel on top (a code change rebuilds only that layer).
# No embedded PostgreSQL/Redis here: the compose file runs both as services.

# --- the wheel, built from the source -------------------------------------------------------
FROM python:3.11-slim AS wheel
WORKDIR /src
COPY pyproject.toml README.md beat_schedule.py ./
COPY core ./core
COPY tasks ./tasks
COPY sim ./sim
COPY shell ./shell
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# --- the image ----------------------------------------------------------------------------
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIGIL_HOME=/data

RUN useradd --create-home --uid 10001 vigil && mkdir -p /data && chown vigil /data

COPY requirements.lock /tmp/requirements.lock
RUN pip install --require-hashes -r /tmp/requirements.lock && rm /tmp/requirements.lock

COPY --from=wheel /wheels /tmp/wheels
RUN pip install --no-deps /tmp/wheels/*.whl && rm -rf /tmp/wheels

USER vigil
WORKDIR /data
ENTRYPOINT ["vigil"]
CMD ["--help"]
