{{/* Names, labels and the rendered operator configuration. */}}

{{- define "enclave-operator.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "enclave-operator.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "enclave-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "enclave-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "enclave-operator.labels" -}}
{{ include "enclave-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: enclave-operator
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "enclave-operator.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
{{- end -}}

{{- define "enclave-operator.webhookSecret" -}}
{{ include "enclave-operator.fullname" . }}-webhook-tls
{{- end -}}

{{- define "enclave-operator.signingKeySecret" -}}
{{ .Values.webhook.signingKey.existingSecret | default (printf "%s-signing-key" (include "enclave-operator.fullname" .)) }}
{{- end -}}

{{- define "enclave-operator.peeringName" -}}
{{ (.Values.config.peering | default dict).name | default "enclave-operator" }}
{{- end -}}

{{- define "enclave-operator.namespaceRole" -}}
{{ include "enclave-operator.fullname" . }}-namespace
{{- end -}}

{{- define "enclave-operator.backupNamespace" -}}
{{ (.Values.config.federation | default dict).backupNamespace | default "enclave-backup" }}
{{- end -}}

{{- define "enclave-operator.ingestNamespace" -}}
{{ .Values.config.ingest.namespace | default "enclave-ingest" }}
{{- end -}}

{{/*
The operator's configuration file: .Values.config, plus what the chart decides — the webhook section
(served from the mounted certificate by every pod; the chart owns the configurations; the approval signing
key from the Secret every pod shares, env ENCLAVE_SIGNING_KEY), the worker image,
and the operator's own identity for the access it grants itself in the namespaces it creates.
*/}}
{{- define "enclave-operator.config" -}}
{{- $config := deepCopy .Values.config -}}
{{- $ingest := get $config "ingest" | default dict -}}
{{- if not (get $ingest "image") -}}
{{- $_ := set $ingest "image" (include "enclave-operator.image" .) -}}
{{- end -}}
{{- $_ := set $config "ingest" $ingest -}}
{{- $kubernetes := get $config "kubernetes" | default dict -}}
{{- $_ := set $kubernetes "operatorServiceAccount" (printf "%s/%s" .Release.Namespace (include "enclave-operator.fullname" .)) -}}
{{- $_ := set $kubernetes "operatorNamespaceRole" (include "enclave-operator.namespaceRole" .) -}}
{{- $_ := set $config "kubernetes" $kubernetes -}}
{{- $_ := set $config "webhook" (dict "port" (int .Values.webhook.port) "certFile" "/tls/tls.crt" "keyFile" "/tls/tls.key" "signingKeyEnv" "ENCLAVE_SIGNING_KEY") -}}
{{ toYaml $config }}
{{- end -}}
