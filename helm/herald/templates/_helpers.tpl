{{/*
Names, labels and the pieces the three Deployments share. Helpers taking a component are called
with (dict "root" $ "component" "ingest|dispatcher|ledger|migrate").
*/}}

{{- define "herald.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* "<release>-herald", or the release name alone when it already contains the chart name. */}}
{{- define "herald.fullname" -}}
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

{{/* Name of a component's resources: "<fullname>-<component>". */}}
{{- define "herald.componentName" -}}
{{- printf "%s-%s" (include "herald.fullname" .root | trunc 50 | trimSuffix "-") .component }}
{{- end }}

{{- define "herald.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selects every pod and Service of this release. */}}
{{- define "herald.selectorLabels" -}}
app.kubernetes.io/name: {{ include "herald.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "herald.labels" -}}
helm.sh/chart: {{ include "herald.chart" . }}
{{ include "herald.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: herald
{{- end }}

{{- define "herald.componentSelectorLabels" -}}
{{ include "herald.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "herald.componentLabels" -}}
{{ include "herald.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "herald.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The Secret every pod loads: the existing one, or the one this chart creates. */}}
{{- define "herald.secretName" -}}
{{- default (include "herald.fullname" .) .Values.secret.existingSecret }}
{{- end }}

{{- define "herald.configMapName" -}}
{{- include "herald.fullname" . }}
{{- end }}

{{- define "herald.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "herald.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The RabbitMQ work queues dispatchers consume, as the broker crate names them: the 8 work
shards of fresh tasks (`<prefix>.deliveries.work.0` … `.7`, WORK_SHARDS in crates/broker), the 8
of returning ones (retries, parked tasks: `<prefix>.deliveries.again.0` … `.7`), the 8 of bulk
ones (a tenant's burst past HERALD_TENANT_FRESH_RATE: `<prefix>.deliveries.bulk.0` … `.7`) and the
legacy queue of older versions. One name per line. */}}
{{- define "herald.workQueues" -}}
{{- $prefix := default "herald" .Values.config.HERALD_AMQP_PREFIX }}
{{- range $shard := until 8 }}
{{ printf "%s.deliveries.work.%d" $prefix $shard }}
{{- end }}
{{- range $shard := until 8 }}
{{ printf "%s.deliveries.again.%d" $prefix $shard }}
{{- end }}
{{- range $shard := until 8 }}
{{ printf "%s.deliveries.bulk.%d" $prefix $shard }}
{{- end }}
{{ printf "%s.deliveries.work" $prefix }}
{{- end }}

{{/* "true" when something other than the Deployment owns a component's replica count. */}}
{{- define "herald.autoscaled" -}}
{{- $v := index .root.Values .component }}
{{- if eq .component "ingest" }}
{{- if $v.autoscaling.enabled }}true{{ end }}
{{- else if eq .component "dispatcher" }}
{{- if or $v.autoscaling.enabled $v.autoscaling.keda.enabled }}true{{ end }}
{{- end }}
{{- end }}

{{/*
A Herald Deployment. ingest and ledger serve gRPC on grpcPort; every service serves /metrics,
/livez and /readyz on metricsPort. Settings come from the ConfigMap and the Secret; the listen
addresses, which differ per service, are set here.
*/}}
{{- define "herald.deployment" -}}
{{- $root := .root }}
{{- $c := .component }}
{{- $v := index $root.Values $c }}
{{- $ctx := dict "root" $root "component" $c }}
{{- $grpc := ne $c "dispatcher" }}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "herald.componentName" $ctx }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "herald.componentLabels" $ctx | nindent 4 }}
spec:
  {{- if not (include "herald.autoscaled" $ctx) }}
  replicas: {{ $v.replicaCount }}
  {{- end }}
  revisionHistoryLimit: 5
  selector:
    matchLabels:
      {{- include "herald.componentSelectorLabels" $ctx | nindent 6 }}
  strategy:
    type: RollingUpdate
    rollingUpdate:
      maxSurge: 1
      maxUnavailable: 0
  template:
    metadata:
      labels:
        {{- include "herald.componentLabels" $ctx | nindent 8 }}
      annotations:
        checksum/config: {{ include (print $root.Template.BasePath "/configmap.yaml") $root | sha256sum }}
        {{- if not $root.Values.secret.existingSecret }}
        checksum/secret: {{ include (print $root.Template.BasePath "/secret.yaml") $root | sha256sum }}
        {{- end }}
        {{- with $v.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      serviceAccountName: {{ include "herald.serviceAccountName" $root }}
      automountServiceAccountToken: false
      {{- with $root.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $root.Values.priorityClassName }}
      priorityClassName: {{ . }}
      {{- end }}
      securityContext:
        {{- toYaml $root.Values.podSecurityContext | nindent 8 }}
      terminationGracePeriodSeconds: {{ $v.terminationGracePeriodSeconds }}
      containers:
        - name: {{ $c }}
          image: {{ include "herald.image" $root }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          command: ["herald-{{ $c }}"]
          ports:
            {{- if $grpc }}
            - name: grpc
              containerPort: {{ $v.grpcPort }}
              protocol: TCP
            {{- end }}
            - name: metrics
              containerPort: {{ $v.metricsPort }}
              protocol: TCP
          envFrom:
            - configMapRef:
                name: {{ include "herald.configMapName" $root }}
            - secretRef:
                name: {{ include "herald.secretName" $root }}
          env:
            {{- if eq $c "ingest" }}
            - name: HERALD_INGEST_ADDR
              value: "0.0.0.0:{{ $v.grpcPort }}"
            {{- else if eq $c "ledger" }}
            - name: HERALD_LEDGER_ADDR
              value: "0.0.0.0:{{ $v.grpcPort }}"
            {{- end }}
            - name: HERALD_METRICS_ADDR
              value: "0.0.0.0:{{ $v.metricsPort }}"
            - name: OTEL_SERVICE_NAME
              value: herald-{{ $c }}
            - name: POD_NAME
              valueFrom:
                fieldRef:
                  fieldPath: metadata.name
            - name: POD_NAMESPACE
              valueFrom:
                fieldRef:
                  fieldPath: metadata.namespace
            - name: OTEL_RESOURCE_ATTRIBUTES
              value: {{ printf "service.version=%s,k8s.namespace.name=$(POD_NAMESPACE),k8s.pod.name=$(POD_NAME)%s" $root.Chart.AppVersion (ternary (printf ",%s" $root.Values.otel.resourceAttributes) "" (ne $root.Values.otel.resourceAttributes "")) | quote }}
            {{- range $name, $value := $v.env }}
            - name: {{ $name }}
              value: {{ $value | toString | quote }}
            {{- end }}
          startupProbe:
            httpGet:
              path: /livez
              port: metrics
            periodSeconds: {{ $root.Values.probes.startup.periodSeconds }}
            failureThreshold: {{ $root.Values.probes.startup.failureThreshold }}
          livenessProbe:
            httpGet:
              path: /livez
              port: metrics
            periodSeconds: {{ $root.Values.probes.liveness.periodSeconds }}
            timeoutSeconds: {{ $root.Values.probes.liveness.timeoutSeconds }}
            failureThreshold: {{ $root.Values.probes.liveness.failureThreshold }}
          readinessProbe:
            httpGet:
              path: /readyz
              port: metrics
            periodSeconds: {{ $root.Values.probes.readiness.periodSeconds }}
            timeoutSeconds: {{ $root.Values.probes.readiness.timeoutSeconds }}
            failureThreshold: {{ $root.Values.probes.readiness.failureThreshold }}
          {{- if and $grpc (gt (int $v.preStopSleepSeconds) 0) }}
          lifecycle:
            preStop:
              exec:
                command: ["sleep", "{{ $v.preStopSleepSeconds }}"]
          {{- end }}
          resources:
            {{- toYaml $v.resources | nindent 12 }}
          securityContext:
            {{- toYaml $root.Values.containerSecurityContext | nindent 12 }}
          volumeMounts:
            - name: tmp
              mountPath: /tmp
      volumes:
        - name: tmp
          emptyDir:
            sizeLimit: 64Mi
      {{- with $root.Values.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $root.Values.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $root.Values.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- if $root.Values.topologySpread.enabled }}
      topologySpreadConstraints:
        - maxSkew: {{ $root.Values.topologySpread.maxSkew }}
          topologyKey: {{ $root.Values.topologySpread.topologyKey }}
          whenUnsatisfiable: {{ $root.Values.topologySpread.whenUnsatisfiable }}
          labelSelector:
            matchLabels:
              {{- include "herald.componentSelectorLabels" $ctx | nindent 14 }}
      {{- end }}
{{- end }}

{{/* A PodDisruptionBudget for one component. */}}
{{- define "herald.pdb" -}}
{{- $v := index .root.Values .component }}
{{- if $v.pdb.enabled }}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "herald.componentName" . }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "herald.componentLabels" . | nindent 4 }}
spec:
  maxUnavailable: {{ $v.pdb.maxUnavailable }}
  selector:
    matchLabels:
      {{- include "herald.componentSelectorLabels" . | nindent 6 }}
{{- end }}
{{- end }}

{{/* A CPU HorizontalPodAutoscaler for one component. */}}
{{- define "herald.hpa" -}}
{{- $a := (index .root.Values .component).autoscaling }}
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ include "herald.componentName" . }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "herald.componentLabels" . | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ include "herald.componentName" . }}
  minReplicas: {{ $a.minReplicas }}
  maxReplicas: {{ $a.maxReplicas }}
  metrics:
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ $a.targetCPUUtilizationPercentage }}
  {{- with $a.behavior }}
  behavior:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
