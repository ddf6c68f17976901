{{/*
Names, labels and the few decisions several templates share. Everything a pod reads from a
file lives at a fixed path defined here, so that shoal.conf (configmap.yaml) and the volume
mounts (deployment.yaml) cannot disagree.
*/}}

{{- define "shoal.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name; 50 characters leave room for the suffixes below. */}}
{{- define "shoal.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "shoal.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "shoal.selectorLabels" -}}
app.kubernetes.io/name: {{ include "shoal.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "shoal.labels" -}}
helm.sh/chart: {{ include "shoal.chart" . }}
{{ include "shoal.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* The broker pods, and only them (the bundled Redis shares name and instance). */}}
{{- define "shoal.brokerSelectorLabels" -}}
{{ include "shoal.selectorLabels" . }}
app.kubernetes.io/component: broker
{{- end }}

{{- define "shoal.redisSelectorLabels" -}}
{{ include "shoal.selectorLabels" . }}
app.kubernetes.io/component: redis
{{- end }}

{{- define "shoal.headlessName" -}}
{{- printf "%s-headless" (include "shoal.fullname" .) }}
{{- end }}

{{- define "shoal.redisName" -}}
{{- printf "%s-redis" (include "shoal.fullname" .) }}
{{- end }}

{{- define "shoal.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "shoal.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "shoal.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "shoal.clusterName" -}}
{{- default (include "shoal.fullname" .) .Values.cluster.name }}
{{- end }}

{{/* Fully qualified names: resolved by shoal itself, so they must not depend on the pod's
DNS search path. */}}
{{- define "shoal.headlessFQDN" -}}
{{- printf "%s.%s.svc.%s" (include "shoal.headlessName" .) .Release.Namespace .Values.clusterDomain }}
{{- end }}

{{- define "shoal.serviceFQDN" -}}
{{- printf "%s.%s.svc.%s" (include "shoal.fullname" .) .Release.Namespace .Values.clusterDomain }}
{{- end }}

{{/* Paths inside the broker container. */}}
{{- define "shoal.confDir" -}}/etc/shoal{{- end }}
{{- define "shoal.runtimeConfDir" -}}/run/shoal/conf.d{{- end }}
{{- define "shoal.passwordPath" -}}/run/secrets/shoal/passwd/passwd{{- end }}
{{- define "shoal.aclPath" -}}/run/secrets/shoal/acl/acl{{- end }}
{{- define "shoal.clusterSecretPath" -}}/run/secrets/shoal/cluster/secret{{- end }}
{{- define "shoal.tlsDir" -}}/run/secrets/shoal/tls{{- end }}

{{/* Which optional files and secrets exist. */}}
{{- define "shoal.hasPasswordFile" -}}
{{- if or .Values.auth.passwordFile.content .Values.auth.passwordFile.existingSecret }}true{{ end }}
{{- end }}

{{- define "shoal.hasAclFile" -}}
{{- if or .Values.auth.aclFile.content .Values.auth.aclFile.existingSecret }}true{{ end }}
{{- end }}

{{/* The chart's own Secret holds whichever of the two files is given inline. */}}
{{- define "shoal.authSecretName" -}}
{{- printf "%s-auth" (include "shoal.fullname" .) }}
{{- end }}

{{- define "shoal.passwordSecretName" -}}
{{- default (include "shoal.authSecretName" .) .Values.auth.passwordFile.existingSecret }}
{{- end }}

{{- define "shoal.aclSecretName" -}}
{{- default (include "shoal.authSecretName" .) .Values.auth.aclFile.existingSecret }}
{{- end }}

{{- define "shoal.clusterSecretName" -}}
{{- default (printf "%s-cluster" (include "shoal.fullname" .)) .Values.cluster.secret.existingSecret }}
{{- end }}

{{- define "shoal.tlsSecretName" -}}
{{- if .Values.tls.existingSecret }}
{{- .Values.tls.existingSecret }}
{{- else }}
{{- printf "%s-tls" (include "shoal.fullname" .) }}
{{- end }}
{{- end }}

{{/* Client certificates need the CA in the Secret. */}}
{{- define "shoal.tlsVerifiesClients" -}}
{{- if or .Values.tls.requireCertificate .Values.tls.useIdentityAsUsername }}true{{ end }}
{{- end }}

{{/* The store URL when it may sit in the ConfigMap; empty when it comes from a Secret. */}}
{{- define "shoal.storeURL" -}}
{{- if .Values.redis.enabled }}
{{- printf "redis://%s.%s.svc.%s:%d" (include "shoal.redisName" .) .Release.Namespace .Values.clusterDomain (int .Values.redis.port) }}
{{- else if not .Values.externalRedis.existingSecret }}
{{- .Values.externalRedis.url }}
{{- end }}
{{- end }}

{{/*
Combinations the schema cannot express. Included by the ConfigMap, which every install
renders, so a bad combination stops the install with a message that names the fix.
*/}}
{{- define "shoal.validate" -}}
{{- if not (or .Values.mqtt.enabled .Values.tls.enabled .Values.websocket.enabled) }}
{{- fail "no client listener: enable mqtt, tls or websocket" }}
{{- end }}
{{- if and .Values.tls.enabled (not .Values.tls.existingSecret) (not .Values.tls.certManager.enabled) }}
{{- fail "tls.enabled needs a certificate: set tls.existingSecret or tls.certManager.enabled" }}
{{- end }}
{{- if and .Values.tls.existingSecret .Values.tls.certManager.enabled }}
{{- fail "tls.existingSecret and tls.certManager.enabled exclude each other" }}
{{- end }}
{{- if and .Values.websocket.secure.enabled (not (and .Values.websocket.enabled .Values.tls.enabled)) }}
{{- fail "websocket.secure.enabled needs websocket.enabled and tls.enabled" }}
{{- end }}
{{- if and (not .Values.redis.enabled) (not .Values.externalRedis.url) (not .Values.externalRedis.existingSecret) }}
{{- fail "nodes share sessions through Redis: keep redis.enabled, or set externalRedis.url or externalRedis.existingSecret" }}
{{- end }}
{{- if and .Values.redis.enabled (or .Values.externalRedis.url .Values.externalRedis.existingSecret) }}
{{- fail "externalRedis is used only with redis.enabled=false" }}
{{- end }}
{{- if and .Values.auth.passwordFile.content .Values.auth.passwordFile.existingSecret }}
{{- fail "auth.passwordFile: give content or existingSecret, not both" }}
{{- end }}
{{- if and .Values.auth.aclFile.content .Values.auth.aclFile.existingSecret }}
{{- fail "auth.aclFile: give content or existingSecret, not both" }}
{{- end }}
{{- if and .Values.cluster.secret.value .Values.cluster.secret.existingSecret }}
{{- fail "cluster.secret: give value or existingSecret, not both" }}
{{- end }}
{{- $ports := list (int .Values.cluster.port) (int .Values.http.port) }}
{{- if .Values.mqtt.enabled }}{{ $ports = append $ports (int .Values.mqtt.port) }}{{ end }}
{{- if .Values.tls.enabled }}{{ $ports = append $ports (int .Values.tls.port) }}{{ end }}
{{- if .Values.websocket.enabled }}{{ $ports = append $ports (int .Values.websocket.port) }}{{ end }}
{{- if .Values.websocket.secure.enabled }}{{ $ports = append $ports (int .Values.websocket.secure.port) }}{{ end }}
{{- if ne (len $ports) (len (uniq $ports)) }}
{{- fail (printf "two listeners share a port: %v" $ports) }}
{{- end }}
{{- end }}

{{/* The per-listener TLS lines, for the MQTT and the WebSocket TLS listeners. */}}
{{- define "shoal.tlsListenerLines" }}
    certfile {{ include "shoal.tlsDir" . }}/tls.crt
    keyfile {{ include "shoal.tlsDir" . }}/tls.key
    tls_version {{ .Values.tls.version }}
    {{- if include "shoal.tlsVerifiesClients" . }}
    cafile {{ include "shoal.tlsDir" . }}/ca.crt
    {{- end }}
    {{- if .Values.tls.requireCertificate }}
    require_certificate true
    {{- end }}
    {{- if .Values.tls.useIdentityAsUsername }}
    use_identity_as_username true
    {{- end }}
{{- end }}

{{/* The ConfigMap's hash, on the pod template: a change of configuration rolls the pods. */}}
{{- define "shoal.configChecksum" -}}
{{- include (print .Template.BasePath "/configmap.yaml") . | sha256sum }}
{{- end }}
