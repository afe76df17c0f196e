# dataproducts server image: `dataproducts serve --http` with the Elasticsearch client and local GGUF models.
# llama-cpp-python compiles llama.cpp from source in the build stage, for any x86-64 with AVX2 (not -march=native,
# so the image runs on other machines than the one that built it); the runtime stage keeps only the wheels.
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DLLAVA_BUILD=OFF"
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential cmake \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY catalog catalog
COPY connectors connectors
COPY embeddings embeddings
COPY servers servers
RUN pip wheel --wheel-dir /wheels '.[elasticsearch,models,otel]'

FROM python:3.11-slim
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1
# libgomp1: llama.cpp's OpenMP runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /wheels /wheels
RUN pip install --no-index --find-links /wheels 'dataproducts[elasticsearch,models,otel]' && rm -rf /wheels
RUN useradd --system --create-home --home-dir /var/lib/dataproducts dataproducts
USER dataproducts
WORKDIR /var/lib/dataproducts
EXPOSE 8765
CMD ["dataproducts", "serve", "--http", "--host", "0.0.0.0", "--port", "8765"]
