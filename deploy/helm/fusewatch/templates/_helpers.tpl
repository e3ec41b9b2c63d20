{{/* Names: every object is <release>-<part>, e.g. fusewatch-analyze. */}}
{{- define "fusewatch.fullname" -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{- define "fusewatch.labels" -}}
app.kubernetes.io/name: fusewatch
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/component: {{ .name }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end -}}

{{- define "fusewatch.selectorLabels" -}}
app.kubernetes.io/name: fusewatch
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .name }}
{{- end -}}

{{/* The site file's text: values.config, else files/site.yaml. */}}
{{- define "fusewatch.siteText" -}}
{{- .Values.config | default (.Files.Get "files/site.yaml") -}}
{{- end -}}

{{/* What the chart reads of the site file (sources, topics, groups, partitions), as JSON. */}}
{{- define "fusewatch.site" -}}
{{- $site := include "fusewatch.siteText" . | fromYaml -}}
{{- if hasKey $site "Error" -}}
{{- fail (printf "the site file is not YAML: %s" $site.Error) -}}
{{- end -}}
{{- $kafka := $site.kafka | default dict -}}
{{- $topics := $kafka.topics | default dict -}}
{{- $partitions := $kafka.media_partitions | default 4 -}}
{{- if kindIs "string" $partitions -}}
{{- fail "kafka.media_partitions of the site file must be a number: the chart bounds analyze and fuse replicas by it" -}}
{{- end -}}
{{- $sources := list -}}
{{- range $site.sources | default list -}}
{{- $sources = append $sources .id -}}
{{- end -}}
{{- $paths := dict -}}
{{- $outputs := $site.outputs | default dict -}}
{{- $clips := $site.clips | default dict -}}
{{- $store := $clips.store | default dict -}}
{{- $search := $site.search | default dict -}}
{{- range $key, $path := dict "snapshots" ($outputs.snapshots_dir | default ".cache/snapshots") "clips" ($store.path | default ".cache/clips") "search" ($search.path | default ".cache/search") -}}
{{- if or (not (kindIs "string" $path)) (not (hasPrefix "/" $path)) (contains "${" $path) -}}
{{- fail (printf "the site file's %s path must be an absolute path without ${…} (the chart mounts a volume there), got %v" $key $path) -}}
{{- end -}}
{{- $_ := set $paths $key $path -}}
{{- end -}}
{{- dict "sources" $sources "partitions" (int $partitions) "groupPrefix" ($kafka.group_prefix | default "fusewatch") "media" ($topics.media | default "fw.media") "features" ($topics.features | default "fw.features") "paths" $paths | toJson -}}
{{- end -}}

{{- define "fusewatch.image" -}}
{{- $tag := .Values.image.tag | default (printf "%s-%s" .Chart.AppVersion .Values.image.variant) -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}

{{/* A health probe: every path needs the bearer token, and Kubernetes expands no $(VAR) in
     httpGet headers, so the probe runs in the container and reads FUSEWATCH_WEB_TOKEN itself. */}}
{{- define "fusewatch.probe" -}}
exec:
  command: ["python", "-m", "daemon.runtime.probe", {{ .path | quote }}]
periodSeconds: {{ .period }}
timeoutSeconds: 10
failureThreshold: {{ .failures }}
{{- end -}}

{{/* One role's Deployment. Arguments (a dict): root, name (object suffix and component), role
     (the --role value), port, web (bool: the dashboard serves health on web.port), replicas
     (omitted when autoscaled), strategy, mounts, volumes, affinity, resources, gpu, grace,
     readyPath (default /readyz). */}}
{{- define "fusewatch.deployment" -}}
{{- $root := .root -}}
{{- $v := $root.Values -}}
{{- $args := list "run" "/etc/fusewatch/site.yaml" "--role" .role -}}
{{- if not .web -}}
{{- $args = concat $args (list "--metrics-port" (toString .port)) -}}
{{- end -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "fusewatch.fullname" $root }}-{{ .name }}
  labels:
    {{- include "fusewatch.labels" (dict "root" $root "name" .name) | nindent 4 }}
spec:
  {{- if not .autoscaled }}
  replicas: {{ .replicas }}
  {{- end }}
  revisionHistoryLimit: 5
  strategy:
    {{- toYaml .strategy | nindent 4 }}
  selector:
    matchLabels:
      {{- include "fusewatch.selectorLabels" (dict "root" $root "name" .name) | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "fusewatch.selectorLabels" (dict "root" $root "name" .name) | nindent 8 }}
        {{- with .source }}
        fusewatch.io/source: {{ . }}
        {{- end }}
      annotations:
        checksum/config: {{ include "fusewatch.siteText" $root | sha256sum }}
        checksum/env: {{ toJson $v.env | sha256sum }}
    spec:
      serviceAccountName: {{ include "fusewatch.fullname" $root }}
      automountServiceAccountToken: false
      terminationGracePeriodSeconds: {{ .grace | default 30 }}
      securityContext:
        {{- toYaml $v.podSecurityContext | nindent 8 }}
      {{- with $v.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      containers:
        - name: {{ .name }}
          image: {{ include "fusewatch.image" $root }}
          imagePullPolicy: {{ $v.image.pullPolicy }}
          args: {{ toJson $args }}
          ports:
            - name: {{ ternary "http" "metrics" (.web | default false) }}
              containerPort: {{ .port }}
              protocol: TCP
          env:
            - name: FUSEWATCH_HEALTH_PORT
              value: {{ .port | quote }}
            {{- if $v.tls.kafkaCASecret }}
            - name: KAFKA_CA_FILE
              value: /etc/fusewatch/tls/kafka/ca.crt
            {{- end }}
            {{- if $v.tls.redisCASecret }}
            - name: REDIS_CA_FILE
              value: /etc/fusewatch/tls/redis/ca.crt
            {{- end }}
          envFrom:
            - configMapRef:
                name: {{ include "fusewatch.fullname" $root }}-env
            - secretRef:
                name: {{ $v.secret.name }}
          startupProbe:
            {{- include "fusewatch.probe" (dict "path" "/healthz" "period" 5 "failures" 60) | nindent 12 }}
          livenessProbe:
            {{- include "fusewatch.probe" (dict "path" "/healthz" "period" 20 "failures" 3) | nindent 12 }}
          readinessProbe:
            {{- include "fusewatch.probe" (dict "path" (.readyPath | default "/readyz") "period" 10 "failures" 3) | nindent 12 }}
          resources:
            {{- $resources := deepCopy .resources -}}
            {{- if .gpu }}
            {{- $_ := set $resources "limits" (merge (dict "nvidia.com/gpu" (toString .gpu)) ($resources.limits | default dict)) }}
            {{- end }}
            {{- toYaml $resources | nindent 12 }}
          securityContext:
            {{- toYaml $v.securityContext | nindent 12 }}
          volumeMounts:
            - name: config
              mountPath: /etc/fusewatch/site.yaml
              subPath: site.yaml
              readOnly: true
            - name: tmp
              mountPath: /tmp
            {{- if $v.tls.kafkaCASecret }}
            - name: kafka-ca
              mountPath: /etc/fusewatch/tls/kafka
              readOnly: true
            {{- end }}
            {{- if $v.tls.redisCASecret }}
            - name: redis-ca
              mountPath: /etc/fusewatch/tls/redis
              readOnly: true
            {{- end }}
            {{- with .mounts }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
      volumes:
        - name: config
          configMap:
            name: {{ include "fusewatch.fullname" $root }}-config
        - name: tmp
          emptyDir: {sizeLimit: 1Gi}
        {{- if $v.tls.kafkaCASecret }}
        - name: kafka-ca
          secret: {secretName: {{ $v.tls.kafkaCASecret }}}
        {{- end }}
        {{- if $v.tls.redisCASecret }}
        - name: redis-ca
          secret: {secretName: {{ $v.tls.redisCASecret }}}
        {{- end }}
        {{- with .volumes }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
{{- end -}}

{{/* The shared (ReadWriteMany) and search (ReadWriteOnce) volumes, by claim. */}}
{{- define "fusewatch.sharedVolume" -}}
name: shared
persistentVolumeClaim:
  claimName: {{ .Values.persistence.shared.existingClaim | default (printf "%s-shared" (include "fusewatch.fullname" .)) }}
{{- end -}}
{{- define "fusewatch.searchVolume" -}}
name: search
persistentVolumeClaim:
  claimName: {{ .Values.persistence.search.existingClaim | default (printf "%s-search" (include "fusewatch.fullname" .)) }}
{{- end -}}
