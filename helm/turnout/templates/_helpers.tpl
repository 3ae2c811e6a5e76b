{{/* Names, labels, the rendered config file and the pod spec. */}}

{{- define "turnout.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "turnout.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "turnout.selectorLabels" -}}
app.kubernetes.io/name: {{ include "turnout.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "turnout.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "turnout.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "turnout.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "turnout.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "turnout.claimName" -}}
{{- default (printf "%s-data" (include "turnout.fullname" .)) .Values.persistence.existingClaim }}
{{- end }}

{{/* Mount points inside the container; the config dir is a whole-ConfigMap mount (never subPath,
which kubelet does not update) so the gateway sees edits. */}}
{{- define "turnout.configDir" -}}/etc/turnout{{- end }}
{{- define "turnout.dataDir" -}}/var/lib/turnout{{- end }}

{{/* Cross-field checks that read better as a sentence than as a schema error. */}}
{{- define "turnout.validate" -}}
{{- range $key := list "store" "store_env" }}
{{- if hasKey $.Values.config $key }}
{{- fail (printf "config.%s is set by the chart: use store.type (sqlite or postgresql) and store.dsnEnv" $key) }}
{{- end }}
{{- end }}
{{- if le (int .Values.terminationGracePeriodSeconds) (int .Values.preStopSleepSeconds) }}
{{- fail "terminationGracePeriodSeconds must be longer than preStopSleepSeconds, or SIGKILL comes before any request can drain" }}
{{- end }}
{{- end }}

{{/* turnout.yaml: values.config with what the chart owns (listen address, state_dir, store) filled in;
with neither upstreams nor routes, a demo route answered by the built-in dummy provider. */}}
{{- define "turnout.config" -}}
{{- $config := deepCopy .Values.config }}
{{- if and (empty $config.upstreams) (empty $config.routes) }}
{{- $_ := set $config "upstreams" (dict "demo" (dict "provider" "dummy" "model" "demo")) }}
{{- $_ = set $config "routes" (dict "demo" (dict "variants" (dict "demo" 100))) }}
{{- end }}
{{- $server := deepCopy (get $config "server" | default dict) }}
{{- $_ := set $server "host" "0.0.0.0" }}
{{- $_ = set $server "port" (int .Values.containerPort) }}
{{- $_ = set $server "state_dir" (printf "%s/state" (include "turnout.dataDir" .)) }}
{{- $_ = set $config "server" $server }}
{{- if eq .Values.store.type "postgresql" }}
{{- $_ = set $config "store_env" .Values.store.dsnEnv }}
{{- else }}
{{- $_ = set $config "store" (printf "sqlite:///%s/turnout.db" (include "turnout.dataDir" .)) }}
{{- end }}
{{- $order := list "server" "auth" "store" "store_env" "upstreams" "routes" }}
{{- range $key := $order }}
{{- if hasKey $config $key }}
{{ dict $key (get $config $key) | toYaml }}
{{- end }}
{{- end }}
{{- range $key := keys $config | sortAlpha }}
{{- if not (has $key $order) }}
{{ dict $key (get $config $key) | toYaml }}
{{- end }}
{{- end }}
{{- end }}

{{- define "turnout.podSpec" -}}
serviceAccountName: {{ include "turnout.serviceAccountName" . }}
automountServiceAccountToken: false
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
terminationGracePeriodSeconds: {{ .Values.terminationGracePeriodSeconds }}
containers:
  - name: turnout
    image: "{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}"
    imagePullPolicy: {{ .Values.image.pullPolicy }}
    args:
      - serve
      - -c
      - {{ include "turnout.configDir" . }}/turnout.yaml
      - --host
      - 0.0.0.0
      - --port
      - {{ .Values.containerPort | quote }}
      - --workers
      - {{ .Values.workers | quote }}
    ports:
      - name: http
        containerPort: {{ .Values.containerPort }}
        protocol: TCP
    {{- with .Values.existingSecret }}
    envFrom:
      - secretRef:
          name: {{ . }}
    {{- end }}
    {{- with .Values.extraEnv }}
    env:
      {{- toYaml . | nindent 6 }}
    {{- end }}
    startupProbe:
      httpGet:
        path: /healthz
        port: http
      periodSeconds: {{ .Values.probes.startup.periodSeconds }}
      failureThreshold: {{ .Values.probes.startup.failureThreshold }}
    readinessProbe:
      httpGet:
        path: /readyz
        port: http
      periodSeconds: {{ .Values.probes.readiness.periodSeconds }}
      failureThreshold: {{ .Values.probes.readiness.failureThreshold }}
    livenessProbe:
      httpGet:
        path: /healthz
        port: http
      periodSeconds: {{ .Values.probes.liveness.periodSeconds }}
      failureThreshold: {{ .Values.probes.liveness.failureThreshold }}
    {{- if gt (int .Values.preStopSleepSeconds) 0 }}
    lifecycle:
      preStop:
        exec:
          command: ["sleep", {{ .Values.preStopSleepSeconds | quote }}]
    {{- end }}
    resources:
      {{- toYaml .Values.resources | nindent 6 }}
    securityContext:
      {{- toYaml .Values.securityContext | nindent 6 }}
    volumeMounts:
      - name: config
        mountPath: {{ include "turnout.configDir" . }}
        readOnly: true
      - name: data
        mountPath: {{ include "turnout.dataDir" . }}
      - name: tmp
        mountPath: /tmp
volumes:
  - name: config
    configMap:
      name: {{ include "turnout.fullname" . }}-config
  - name: data
    {{- if .Values.persistence.enabled }}
    persistentVolumeClaim:
      claimName: {{ include "turnout.claimName" . }}
    {{- else }}
    emptyDir:
      sizeLimit: {{ .Values.persistence.emptyDirSizeLimit }}
    {{- end }}
  - name: tmp
    emptyDir:
      sizeLimit: 256Mi
{{- if .Values.affinity }}
affinity:
  {{- toYaml .Values.affinity | nindent 2 }}
{{- else if eq .Values.podAntiAffinity "hard" }}
affinity:
  podAntiAffinity:
    requiredDuringSchedulingIgnoredDuringExecution:
      - topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            {{- include "turnout.selectorLabels" . | nindent 12 }}
{{- else if eq .Values.podAntiAffinity "soft" }}
affinity:
  podAntiAffinity:
    preferredDuringSchedulingIgnoredDuringExecution:
      - weight: 100
        podAffinityTerm:
          topologyKey: kubernetes.io/hostname
          labelSelector:
            matchLabels:
              {{- include "turnout.selectorLabels" . | nindent 14 }}
{{- end }}
{{- with .Values.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- range . }}
  - {{ toYaml (merge (deepCopy .) (dict "labelSelector" (dict "matchLabels" (include "turnout.selectorLabels" $ | fromYaml)))) | nindent 4 | trim }}
  {{- end }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
