# shellcheck shell=bash disable=SC2154,SC2034,SC2016  # T: the associative array demo.sh declares and reads
# Các đoạn văn của `scripts/demo.sh --class --lang vi` (tiếng Việt), nạp sau en.sh:
# khóa nào thiếu ở đây thì dùng bản tiếng Anh. Các khóa có %s là chuỗi định dạng printf.
# Thuật ngữ layer, image, container, copy-up, whiteout, opaque, redirect giữ nguyên
# tiếng Anh, như các khóa học Docker tiếng Việt vẫn dùng.

T[usage]='cách dùng: scripts/demo.sh                                   bản demo các layer (cần root hoặc /dev/fuse)
           scripts/demo.sh --class [--yes] [--lang en|vi]    bài học, từng bước một (cần root)
  --class  image, layer, container, copy-up, whiteout, opaque, redirect, commit;
           kiểm tra từng khẳng định; chờ Enter giữa các bước (docs/teaching.md)
  --yes    chạy tự động, không chờ
  --lang   en (mặc định) hoặc vi'
T[bad_arg]='scripts/demo.sh: tham số không hợp lệ %s'
T[class_only]='scripts/demo.sh: --yes và --lang chỉ dùng cùng --class'
T[need_root]='scripts/demo.sh --class cần quyền root (nó mount FUSE và ghi xattr trusted.*): hãy chạy bằng sudo'
T[need_python]='scripts/demo.sh --class cần python3 (dùng để tạo file archive của image)'

T[title]='stratafs: image và container của Docker, từng layer một'
T[intro]='Bài học gồm 8 bước. Mỗi lệnh được in sau dấu "$" rồi mới đến kết quả của nó; các
dòng "trace>" đến từ `stratafs trace`, chạy ngầm từ bước 3; mỗi khẳng định của bài
học đều được kiểm tra và in ra dạng "ok: ...".'
T[workdir]='Thư mục làm việc: %s. ./store đóng vai /var/lib/docker; lệnh `stratafs` bên dưới chạy %s với STRATAFS_STORE=./store.'
T[getfattr_standin]='(máy chưa cài getfattr: một đoạn python3 thay thế in ra y hệt; apt-get install attr để dùng bản thật)'
T[enter]='[Enter: sang bước tiếp theo, Ctrl-C: dừng] '
T[enter_end]='[Enter: dọn dẹp và kết thúc] '
T[step]='Bước %s/8: %s'
T[cmd_failed]='lệnh này bị lỗi: %s'
T[trace_none]='trace> (không có sự kiện mới)'
T[no_tracing]='stratafs trace không báo "tracing" trong vòng 10 giây'
T[no_event]='trace không hiện %s trong vòng 10 giây'
T[all_done]='Cả %s phép kiểm tra đều đạt. Dọn dẹp: gỡ các mount, dừng trace và xóa %s.'

# Bước 1
T[s1_title]='Image là một chồng các layer'
T[s1_text]='Một image gồm danh sách các layer cộng với một file config. Mỗi layer là một file tar
chứa những file mà một bước build đã thay đổi. Ta tạo một archive image 3 layer (đúng
định dạng `docker save` xuất ra), import vào một store riêng rồi xem bên trong:
store/overlay2/ chính là /var/lib/docker/overlay2 của Docker.'
T[s1_history]='Mỗi dòng là một bước build, bước mới nhất nằm trên cùng. <missing>: image của các bước
cũ không có trên máy này, chỉ có layer của chúng (docker history cũng hiện như vậy).'
T[s1_vars]='L1, L2, L3: thư mục của các layer, từ dưới lên (mục "Dir" của stratafs image inspect):'
T[s1_store]='Mỗi layer là một thư mục: diff/ chứa các file của layer, link là tên ngắn của nó (l/TÊN
là symlink trỏ tới diff/, để tùy chọn mount không quá dài), lower liệt kê các layer bên
dưới, từ trên xuống. Layer dưới cùng không có lower. diff/ của L3 chỉ chứa những gì lệnh
RUN đã thay đổi: motd mới và một whiteout (c) cho thư mục /usr/share/doc đã bị xóa.'

# Bước 2
T[s2_title]='Hai container từ một image dùng chung các layer'
T[s2_text]='Container chỉ là thêm một layer nằm trên image: một thư mục diff/ rỗng, ghi được. Tạo
container không sao chép gì cả: file lower của cả hai container đều trỏ tới cùng các
layer của image. Mount container chính là overlayfs với lowerdir=các layer của image,
upperdir=diff/ của container.'
T[s2_mount]='Tùy chọn mount mà Docker dựng từ file lower (explain/tree ở dưới cũng đọc nó):'

# Bước 3
T[s3_title]='Lần ghi đầu tiên gây copy-up, lần ghi thứ hai thì không'
T[s3_text]='Các layer của image chỉ đọc. Lần đầu container ghi vào một file thuộc một layer, cả file
được sao chép lên diff/ của container (copy-up), rồi mới được sửa ở đó. Ta theo dõi trực
tiếp bằng `stratafs trace`. Lần ghi thứ hai ghi thẳng vào bản sao đã nằm trong diff/.'
T[s3_first]='COPY-UP etc/motd: dữ liệu lấy từ lower 1 = L3, layer trên cùng, nơi chứa bản motd ta
đang thấy. Thư mục cha etc/ được copy-up trước, chỉ phần metadata: file cần có thư mục
cha trong diff/.'
T[s3_second]='Lần ghi thứ hai không sao chép gì: không có sự kiện mới, bộ đếm copy-up đứng yên.
Giờ c1 có motd riêng; c2 và layer của image vẫn giữ bản cũ.'

# Bước 4
T[s4_title]='Xóa một file của image sẽ để lại whiteout'
T[s4_text]='Container không thể xóa gì trong một layer chỉ đọc. Thay vào đó, nó đặt một whiteout
vào diff/ của mình: một character device 0/0 trùng tên, che file ở bên dưới. Layer vẫn
còn nguyên file đó, và c2 vẫn thấy nó.'

# Bước 5
T[s5_title]='rm -rf dir && mkdir dir: thư mục opaque'
T[s5_text]='Thư mục mới được tạo trong diff/ và đánh dấu opaque (xattr trusted.overlay.opaque=y):
"đừng nhìn xuống các layer bên dưới". Nhờ vậy các file cũ vẫn bị ẩn mà không cần một
whiteout cho từng file, và thư mục mới bắt đầu trống trơn.'

# Bước 6
T[s6_title]='mv dir: redirect'
T[s6_text]='Đổi tên một thư mục của image lẽ ra phải copy-up toàn bộ thư mục đó. Thay vào đó, tên
mới có một thư mục trong diff/ mang xattr trusted.overlay.redirect ghi đường dẫn cũ,
còn tên cũ nhận một whiteout. Các file vẫn nằm trong layer của image: không gì bị sao
chép. (Overlayfs của kernel chỉ làm vậy khi bật redirect_dir; nếu không, mv nhận lỗi
EXDEV và phải sao chép cả cây thư mục.)'

# Bước 7
T[s7_title]='Layer của container chỉ chứa những thay đổi'
T[s7_text]='Mọi việc container đã làm đều nằm trong diff/: một file đã copy-up, một file mới, các
whiteout, một thư mục opaque và một thư mục redirect. Cây thư mục đánh dấu mỗi mục theo
layer của nó (U = diff/ của c1, 1 = L3 ... 3 = L1, ~ = bị ẩn). `stratafs diff`, giống
`docker diff`, đọc diff/ thành A (thêm), C (thay đổi) và D (xóa).'
T[s7_diff]='D /app/cache: thư mục cũ đã mất, những gì thư mục mới chứa được ghi là A.
D /app/data + A /app/store: chính là lần đổi tên. c2 không thay đổi gì.'

# Bước 8
T[s8_title]='docker commit: các thay đổi trở thành một layer mới'
T[s8_text]='commit biến diff/ của c1 thành một layer tar (whiteout thành các mục .wh.) và tạo một
image mới: các layer cũ cộng thêm layer này. history hiện nó ở trên cùng; store có thêm
một thư mục layer, với lower trỏ tới các layer của image. Container tạo từ image mới bắt
đầu với sẵn những thay đổi của ta.'
T[s8_vars]='L4: thư mục của layer mới ("Dir" cuối cùng của stratafs image inspect lesson/app:2):'

# Các phép kiểm tra (dòng "ok: ...")
T[c_history]='image history liệt kê đủ 3 bước build'
T[c_layers]='mỗi layer là overlay2/<id>/ có diff/ và link, và l/<link> trỏ tới diff/ của nó'
T[c_lower]='lower của mỗi layer liệt kê các layer bên dưới, từ trên xuống; layer dưới cùng không có'
T[c_same_view]='c1 và c2 thấy cùng các file'
T[c_same_lower]='c1 và c2 có cùng lower: 3 layer của image, L3 đứng đầu'
T[c_empty]='diff/ của cả hai container đều rỗng'
T[c_copyup_ev]='trace hiện COPY-UP của etc/motd'
T[c_stats_one]='stats: một lần copy-up dữ liệu (%s B: motd của image), cộng %s thư mục (chỉ metadata)'
T[c_stats_same]='stats: lần ghi thứ hai không sao chép gì (copy-up vẫn là %s, %s B)'
T[c_old_motd]='c2 và layer L3 giữ motd cũ; motd của c1 có cả hai dòng mới'
T[c_one_copyup]='sau hai lần ghi, trace có đúng một COPY-UP của etc/motd, và lần ghi thứ hai không sinh sự kiện nào'
T[c_whiteout_ev]='trace hiện WHITEOUT app/plugins/b.so'
T[c_whiteout_dev]='diff/app/plugins/b.so là character device 0/0'
T[c_hidden]='b.so biến mất khỏi c1, nhưng vẫn còn trong c2 và trong layer L2'
T[c_opaque_ev]='trace hiện OPAQUE app/cache'
T[c_opaque_x]='diff/app/cache có trusted.overlay.opaque=y'
T[c_opaque_view]='app/cache của c1 chỉ còn file mới'
T[c_opaque_explain]='stratafs explain gọi app/cache là opaque'
T[c_redirect_ev]='trace hiện REDIRECT app/store'
T[c_redirect_x]='diff/app/store có trusted.overlay.redirect=%s'
T[c_redirect_view]='đọc được app/store/users.db qua redirect, và nó không bị sao chép vào diff/'
T[c_redirect_wh]='diff/app/data là một whiteout (character device 0/0)'
T[c_upper]='diff/ chứa đúng 9 mục đã thay đổi'
T[c_diff]='stratafs diff c1 in ra đúng các dòng A/C/D mong đợi'
T[c_diff_c2]='stratafs diff c2 không in ra gì'
T[c_hist_top]='history của lesson/app:2: bản commit nằm trên cùng, kèm comment, trên 3 bước cũ'
T[c_new_layer]='layer mới là store/overlay2/<id>/ có diff/ và link, và lower của nó chính là lower của c1'
T[c_c3]='container tạo từ lesson/app:2 bắt đầu với sẵn các thay đổi'
