{{/* Names and labels. */}}
{{- define "signer-proxy.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "signer-proxy.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "signer-proxy.selectorLabels" -}}
app.kubernetes.io/name: {{ include "signer-proxy.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "signer-proxy.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "signer-proxy.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "signer-proxy.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "signer-proxy.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The port of a HOST:PORT setting. */}}
{{- define "signer-proxy.port" -}}
{{- splitList ":" . | last | int -}}
{{- end -}}

{{/* "true" when /metrics has a listener of its own (config.metrics_listen). */}}
{{- define "signer-proxy.metricsSeparate" -}}
{{- if .Values.config.metrics_listen -}}true{{- end -}}
{{- end -}}

{{/* The port name Prometheus scrapes. */}}
{{- define "signer-proxy.metricsPortName" -}}
{{- if include "signer-proxy.metricsSeparate" . -}}metrics{{- else -}}http{{- end -}}
{{- end -}}

{{/* HTTPS when the chart serves TLS from tlsSecret or config names a certificate. */}}
{{- define "signer-proxy.scheme" -}}
{{- if or .Values.tlsSecret.name .Values.config.tls_cert_file -}}HTTPS{{- else -}}HTTP{{- end -}}
{{- end -}}

{{/* Refuse settings that cannot work in a pod, naming the value to change. */}}
{{- define "signer-proxy.validate" -}}
{{- $host := .Values.config.listen | splitList ":" | initial | join ":" -}}
{{- if or (hasPrefix "127." $host) (eq $host "localhost" "[::1]" "::1") -}}
{{- fail (printf "config.listen is %s: a loopback address cannot be reached through the Service; use 0.0.0.0:PORT" .Values.config.listen) -}}
{{- end -}}
{{- $redis := or .Values.redis.url .Values.redis.existingSecret.name -}}
{{- $many := or (gt (int .Values.replicaCount) 1) (and .Values.autoscaling.enabled (gt (int .Values.autoscaling.maxReplicas) 1)) -}}
{{- $auth := or .Values.apiKeysSecret.name .Values.config.api_keys_file .Values.tlsSecret.clientCaKey .Values.config.tls_client_ca_file -}}
{{- if not (or $auth .Values.config.insecure_no_auth) -}}
{{- fail "no authentication: anyone reaching the Service could sign with every key. Set apiKeysSecret.name (API key hashes from `signer-proxy hash-api-key`) or tlsSecret.clientCaKey (client certificates), or config.insecure_no_auth: true if a NetworkPolicy you control is the only guard" -}}
{{- end -}}
{{- if and .Values.config.chains (or .Values.config.upstream .Values.config.upstream_ws .Values.upstreamSecret.name .Values.upstreamWsSecret.name) -}}
{{- fail "config.chains is set, so each chain names its own upstream: leave config.upstream, config.upstream_ws, upstreamSecret.name and upstreamWsSecret.name empty (a node's secret header: upstream_headers \"Name: env:VAR\" in its entry, VAR from extraEnv; docs/chains.md)" -}}
{{- end -}}
{{- if and $many (not $redis) -}}
{{- fail "more than one replica needs the Redis nonce store: set redis.url or redis.existingSecret.name, or keep replicaCount: 1 and autoscaling off (replicas would hand out the same nonces)" -}}
{{- end -}}
{{- end -}}
